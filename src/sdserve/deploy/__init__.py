"""Running sdserve on a distributed runtime instead of in one process.

``deploy.ray`` is a Ray Serve application: API replicas run the ordinary job service over
a shared database and object store, and hand their batches to model replicas through a
``RemoteEngine`` (``deploy.remote_engine``), the service's engine protocol backed by a
Ray Serve handle. The engine, service and API code are the embedded mode's own.
"""
