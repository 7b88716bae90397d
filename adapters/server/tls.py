"""The TLS contexts a server builds from its :class:`~socks_sansio.ServerConfig`."""

from __future__ import annotations

import ssl

from socks_sansio import ServerConfig

__all__ = ["server_ssl_context", "upstream_ssl_context"]


def server_ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The context of the ``tls_listen`` addresses (``None`` without any), TLS 1.2 or later.

    Raises:
        OSError: the certificate or key cannot be read (``ssl.SSLError`` is an OSError).
    """
    if not config.tls_listen:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    return context


def upstream_ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The context for ``https://`` upstreams (``None`` without any): ``upstream_cacert``, or the system's CAs."""
    if not config.upstreams:
        return None
    return ssl.create_default_context(cafile=config.upstream_cacert)
