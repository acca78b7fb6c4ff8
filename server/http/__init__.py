"""The h11 shell: the server (bind, accept, cap, drain), one connection, routing and responses.

Rule: sockets live in ``server`` and ``connection``; ``routing`` is plain values
(a Request in, a Response out) and does no I/O.
"""

from server.http.connection import HttpConnection as HttpConnection
from server.http.connection import HttpLimits as HttpLimits
from server.http.routing import Handler as Handler
from server.http.routing import Request as Request
from server.http.routing import Response as Response
from server.http.routing import Router as Router
from server.http.routing import gzip_if_accepted as gzip_if_accepted
from server.http.server import HttpServer as HttpServer
from server.http.server import ListenError as ListenError
