"""The HTTP service: management API, verification endpoints, and the app that serves them."""
