"""socks-sansio: SOCKS5, SOCKS4/4a and HTTP CONNECT proxy protocols without I/O.

Bring your own I/O: feed received bytes to a connection object, take events
out, and send the bytes it gives you. See the README for the whole picture.

Three levels, each built on the one before, none doing I/O:

* the machines and codecs (``Socks5Connection``, ``HttpConnectConnection``,
  ``parse_udp_datagram``...): one protocol, one role;
* the drivers (``ClientHandshake``, ``ServerHandshake``): one hop's whole
  handshake, with its policy;
* the plans (``ConnectPlan``, ``AssociatePlan``, ``PoolKeeper``) and the server
  session (``ServerSession``): a whole client call or a whole client connection
  of a server, as generators of I/O operations (``client_operations``,
  ``server_operations``) that a backend performs.
"""

from ._address import Address as Address
from ._address import Host as Host
from ._client import operations as client_operations
from ._client.associate import AssociatePlan as AssociatePlan
from ._client.failover import RetryPolicy as RetryPolicy
from ._client.hops import ConnectionInfo as ConnectionInfo
from ._client.hops import Deadline as Deadline
from ._client.hops import ProxySpec as ProxySpec
from ._client.hops import advertised as advertised
from ._client.hops import to_proxies as to_proxies
from ._client.hops import unwrap_relay_datagram as unwrap_relay_datagram
from ._client.plan import ConnectPlan as ConnectPlan
from ._client.plan import HandshakePlan as HandshakePlan
from ._client.pool import IdleConnections as IdleConnections
from ._client.pool import PoolKeeper as PoolKeeper
from ._client.pool import PoolStats as PoolStats
from ._client_driver import ClientHandshake as ClientHandshake
from ._client_driver import HandshakeStatus as HandshakeStatus
from ._client_driver import needs_local_resolution as needs_local_resolution
from ._codes import AddressType as AddressType
from ._codes import AuthMethod as AuthMethod
from ._codes import Command as Command
from ._codes import ReplyCode as ReplyCode
from ._codes import Socks4ReplyCode as Socks4ReplyCode
from ._detect import MIN_DETECT_BYTES as MIN_DETECT_BYTES
from ._detect import detect_protocol as detect_protocol
from ._environment import NoProxy as NoProxy
from ._environment import select_proxy as select_proxy
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProtocolError as ProtocolError
from ._errors import ProxyAuthError as ProxyAuthError
from ._errors import ProxyConnectionError as ProxyConnectionError
from ._errors import ProxyError as ProxyError
from ._errors import ProxyProtocolError as ProxyProtocolError
from ._errors import ProxyRefusedError as ProxyRefusedError
from ._errors import ProxyTimeoutError as ProxyTimeoutError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._frames import DEFAULT_MAX_FRAME_SIZE as DEFAULT_MAX_FRAME_SIZE
from ._frames import FRAME_HEADER_SIZE as FRAME_HEADER_SIZE
from ._frames import Frame as Frame
from ._frames import FrameDecoder as FrameDecoder
from ._frames import encode_frame as encode_frame
from ._http1 import HttpResponse as HttpResponse
from ._http1 import ResponseReader as ResponseReader
from ._http1 import encode_request as encode_request
from ._http_connection import HttpConnectConnection as HttpConnectConnection
from ._http_connection import HttpConnectState as HttpConnectState
from ._http_events import ConnectRequest as ConnectRequest
from ._http_events import ConnectResponse as ConnectResponse
from ._http_events import HttpConnectEvent as HttpConnectEvent
from ._http_events import proxy_basic_auth as proxy_basic_auth
from ._http_forward import HOP_BY_HOP as HOP_BY_HOP
from ._http_forward import BodyEncoder as BodyEncoder
from ._http_forward import ForwardedHead as ForwardedHead
from ._http_forward import RequestKind as RequestKind
from ._http_forward import forward_request as forward_request
from ._http_forward import forward_response as forward_response
from ._http_forward import proxy_credentials as proxy_credentials
from ._http_forward import request_kind as request_kind
from ._http_forward_events import ConnectHandOff as ConnectHandOff
from ._http_forward_events import ForwardBodyData as ForwardBodyData
from ._http_forward_events import ForwardEndOfMessage as ForwardEndOfMessage
from ._http_forward_events import ForwardRequest as ForwardRequest
from ._http_forward_events import ForwardResponse as ForwardResponse
from ._http_forward_reader import ForwardRequestReader as ForwardRequestReader
from ._http_forward_reader import ForwardState as ForwardState
from ._http_forward_response import ForwardResponseReader as ForwardResponseReader
from ._proxy_protocol import DEFAULT_MAX_PROXY_HEADER_SIZE as DEFAULT_MAX_PROXY_HEADER_SIZE
from ._proxy_protocol import MAX_PROXY_V1_HEADER_SIZE as MAX_PROXY_V1_HEADER_SIZE
from ._proxy_protocol import MAX_PROXY_V2_HEADER_SIZE as MAX_PROXY_V2_HEADER_SIZE
from ._proxy_protocol import PROXY_V2_SIGNATURE as PROXY_V2_SIGNATURE
from ._proxy_protocol import ProxyCommand as ProxyCommand
from ._proxy_protocol import ProxyFamily as ProxyFamily
from ._proxy_protocol import ProxyHeader as ProxyHeader
from ._proxy_protocol import ProxyHeaderReader as ProxyHeaderReader
from ._proxy_protocol import ProxyTLVType as ProxyTLVType
from ._proxy_protocol import encode_proxy_header as encode_proxy_header
from ._proxy_url import DEFAULT_PORTS as DEFAULT_PORTS
from ._proxy_url import ProxyProtocol as ProxyProtocol
from ._proxy_url import ProxyURL as ProxyURL
from ._rfc1929 import UsernamePasswordReply as UsernamePasswordReply
from ._rfc1929 import UsernamePasswordRequest as UsernamePasswordRequest
from ._server import operations as server_operations
from ._server.config import ServerConfig as ServerConfig
from ._server.config import listen_address as listen_address
from ._server.outcome import MetricsSink as MetricsSink
from ._server.outcome import Outcome as Outcome
from ._server.outcome import OutcomeKind as OutcomeKind
from ._server.outcome import ServerStats as ServerStats
from ._server.outcome import StartRelay as StartRelay
from ._server.outcome import StartUdpRelay as StartUdpRelay
from ._server.policy import AccessPolicy as AccessPolicy
from ._server.policy import AccessRule as AccessRule
from ._server.policy import UserDatabase as UserDatabase
from ._server.ratelimit import Rate as Rate
from ._server.ratelimit import RateLimitConfig as RateLimitConfig
from ._server.ratelimit import RateLimits as RateLimits
from ._server.session import ServerSession as ServerSession
from ._server.shared_limits import ADMIT_SCRIPT as TUNNEL_ADMIT_SCRIPT
from ._server.shared_limits import StoreOutage as StoreOutage
from ._server.udp import UdpRelayPolicy as UdpRelayPolicy
from ._server.upstream import UpstreamRule as UpstreamRule
from ._server.upstream import parse_upstream as parse_upstream
from ._server_driver import ClientClosed as ClientClosed
from ._server_driver import CredentialsReceived as CredentialsReceived
from ._server_driver import Failure as Failure
from ._server_driver import ServerEvent as ServerEvent
from ._server_driver import ServerHandshake as ServerHandshake
from ._server_driver import ServerStatus as ServerStatus
from ._server_driver import TunnelRequested as TunnelRequested
from ._socks4 import Socks4Connection as Socks4Connection
from ._socks4 import Socks4State as Socks4State
from ._socks4_events import Socks4Event as Socks4Event
from ._socks4_events import Socks4Reply as Socks4Reply
from ._socks4_events import Socks4Request as Socks4Request
from ._socks5_connection import Socks5Connection as Socks5Connection
from ._socks5_events import UNSPECIFIED_ADDRESS as UNSPECIFIED_ADDRESS
from ._socks5_events import CommandReply as CommandReply
from ._socks5_events import CommandRequest as CommandRequest
from ._socks5_events import ConnectionClosed as ConnectionClosed
from ._socks5_events import Greeting as Greeting
from ._socks5_events import MethodSelection as MethodSelection
from ._socks5_events import Socks5Event as Socks5Event
from ._socks5_state import Socks5State as Socks5State
from ._stepper import Stepper as Stepper
from ._udp import MAX_UDP_HEADER_SIZE as MAX_UDP_HEADER_SIZE
from ._udp import UdpDatagram as UdpDatagram
from ._udp import encode_udp_datagram as encode_udp_datagram
from ._udp import parse_udp_datagram as parse_udp_datagram
from ._util import CLIENT as CLIENT
from ._util import NEED_DATA as NEED_DATA
from ._util import PAUSED as PAUSED
from ._util import SERVER as SERVER
from ._util import NeedData as NeedData
from ._util import Paused as Paused
from ._util import Role as Role
from ._version import __version__ as __version__

__all__ = [
    "CLIENT",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_PROXY_HEADER_SIZE",
    "DEFAULT_PORTS",
    "FRAME_HEADER_SIZE",
    "HOP_BY_HOP",
    "MAX_PROXY_V1_HEADER_SIZE",
    "MAX_PROXY_V2_HEADER_SIZE",
    "MAX_UDP_HEADER_SIZE",
    "MIN_DETECT_BYTES",
    "NEED_DATA",
    "PAUSED",
    "PROXY_V2_SIGNATURE",
    "SERVER",
    "TUNNEL_ADMIT_SCRIPT",
    "UNSPECIFIED_ADDRESS",
    "AccessPolicy",
    "AccessRule",
    "Address",
    "AddressType",
    "AssociatePlan",
    "AuthMethod",
    "BodyEncoder",
    "ClientClosed",
    "ClientHandshake",
    "Command",
    "CommandReply",
    "CommandRequest",
    "ConnectHandOff",
    "ConnectPlan",
    "ConnectRequest",
    "ConnectResponse",
    "ConnectionClosed",
    "ConnectionInfo",
    "CredentialsReceived",
    "Deadline",
    "Failure",
    "ForwardBodyData",
    "ForwardEndOfMessage",
    "ForwardRequest",
    "ForwardRequestReader",
    "ForwardResponse",
    "ForwardResponseReader",
    "ForwardState",
    "ForwardedHead",
    "Frame",
    "FrameDecoder",
    "Greeting",
    "HandshakePlan",
    "HandshakeStatus",
    "Host",
    "HttpConnectConnection",
    "HttpConnectEvent",
    "HttpConnectState",
    "HttpResponse",
    "IdleConnections",
    "LocalProtocolError",
    "MethodSelection",
    "MetricsSink",
    "NeedData",
    "NoProxy",
    "Outcome",
    "OutcomeKind",
    "Paused",
    "PoolKeeper",
    "PoolStats",
    "ProtocolError",
    "ProxyAuthError",
    "ProxyCommand",
    "ProxyConnectionError",
    "ProxyError",
    "ProxyFamily",
    "ProxyHeader",
    "ProxyHeaderReader",
    "ProxyProtocol",
    "ProxyProtocolError",
    "ProxyRefusedError",
    "ProxySpec",
    "ProxyTLVType",
    "ProxyTimeoutError",
    "ProxyURL",
    "Rate",
    "RateLimitConfig",
    "RateLimits",
    "RemoteProtocolError",
    "ReplyCode",
    "RequestKind",
    "ResponseReader",
    "RetryPolicy",
    "Role",
    "ServerConfig",
    "ServerEvent",
    "ServerHandshake",
    "ServerSession",
    "ServerStats",
    "ServerStatus",
    "Socks4Connection",
    "Socks4Event",
    "Socks4Reply",
    "Socks4ReplyCode",
    "Socks4Request",
    "Socks4State",
    "Socks5Connection",
    "Socks5Event",
    "Socks5State",
    "StartRelay",
    "StartUdpRelay",
    "Stepper",
    "StoreOutage",
    "TunnelRequested",
    "UdpDatagram",
    "UdpRelayPolicy",
    "UpstreamRule",
    "UserDatabase",
    "UsernamePasswordReply",
    "UsernamePasswordRequest",
    "__version__",
    "advertised",
    "client_operations",
    "detect_protocol",
    "encode_frame",
    "encode_proxy_header",
    "encode_request",
    "encode_udp_datagram",
    "forward_request",
    "forward_response",
    "listen_address",
    "needs_local_resolution",
    "parse_udp_datagram",
    "parse_upstream",
    "proxy_basic_auth",
    "proxy_credentials",
    "request_kind",
    "select_proxy",
    "server_operations",
    "to_proxies",
    "unwrap_relay_datagram",
]
