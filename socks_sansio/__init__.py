"""socks-sansio: SOCKS5, SOCKS4/4a and HTTP CONNECT proxy protocols without I/O.

Bring your own I/O: feed received bytes to a connection object, take events
out, and send the bytes it gives you. See the README for the whole picture.
"""

from ._address import Address as Address
from ._address import Host as Host
from ._codes import AddressType as AddressType
from ._codes import AuthMethod as AuthMethod
from ._codes import Command as Command
from ._codes import ReplyCode as ReplyCode
from ._codes import Socks4ReplyCode as Socks4ReplyCode
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._rfc1929 import UsernamePasswordReply as UsernamePasswordReply
from ._rfc1929 import UsernamePasswordRequest as UsernamePasswordRequest
from ._socks5_connection import Socks5Connection as Socks5Connection
from ._socks5_events import UNSPECIFIED_ADDRESS as UNSPECIFIED_ADDRESS
from ._socks5_events import CommandReply as CommandReply
from ._socks5_events import CommandRequest as CommandRequest
from ._socks5_events import ConnectionClosed as ConnectionClosed
from ._socks5_events import Greeting as Greeting
from ._socks5_events import MethodSelection as MethodSelection
from ._socks5_events import Socks5Event as Socks5Event
from ._socks5_state import Socks5State as Socks5State
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
    "NEED_DATA",
    "PAUSED",
    "SERVER",
    "UNSPECIFIED_ADDRESS",
    "Address",
    "AddressType",
    "AuthMethod",
    "Command",
    "CommandReply",
    "CommandRequest",
    "ConnectionClosed",
    "Greeting",
    "Host",
    "LocalProtocolError",
    "MethodSelection",
    "NeedData",
    "Paused",
    "ProtocolError",
    "RemoteProtocolError",
    "ReplyCode",
    "Role",
    "Socks4ReplyCode",
    "Socks5Connection",
    "Socks5Event",
    "Socks5State",
    "UsernamePasswordReply",
    "UsernamePasswordRequest",
    "__version__",
]
