"""Running the real pipeline away from a proxy: replaying recorded traffic (``authz replay``)."""
