"""moto's S3 server answering as GCS's XML API, for the storage conformance suite.

Google's XML API is S3's (the same paths, `list-type=2` listings, `?uploads` multipart
uploads and XML bodies), and no GCS emulator that installs here answers it (see
docs/datastores.md). `object_store`, with OAuth disabled for an emulator, sends
`Authorization: Bearer ` with no token (and none at all on some calls). moto reads an
Authorization header as an AWS signature (that one fails with a 500), and a call without one
as anonymous (refused on private objects), so this gives every call a token of its own, as
GCS's clients do, and serves moto's own application otherwise unchanged.

    python moto_gcs.py <port>
"""

import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

moto = DomainDispatcherApplication(create_backend_app)


def app(environ, start_response):
    if environ.get("HTTP_AUTHORIZATION", "").strip() in ("", "Bearer"):
        environ["HTTP_AUTHORIZATION"] = "Bearer emulator"
    return moto(environ, start_response)


run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=True, request_handler=MotoRequestHandler)
