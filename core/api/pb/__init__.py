# Regenerate with `make proto` (scripts/gen_proto.py); do not edit by hand.
"""Generated protobuf classes and grpclib stubs of the daemon's wire layer.

One module per proto package (scripts/gen_proto.py API_MODULES): control (moby.buildkit.v1),
worker (moby.buildkit.v1.types), apicaps, sourcepolicy, gateway (moby.buildkit.v1.frontend),
filesync (moby.filesync.v1: FileSync, FileSend, Auth), secrets (moby.buildkit.secrets.v1),
sshforward (moby.sshforward.v1), health (grpc.health.v1), fsutil (fsutil.types), status
(google.rpc) and wkt (a wire twin of google.protobuf.Timestamp keeping nanoseconds). Message
types of package pb are bkcore.llb.pb. Import the modules directly; this package imports
nothing.
"""
