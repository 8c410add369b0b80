"""The web playground at ``/``: one HTML page with plain JS and CSS (no build step, no CDN)
that drives the native job API, plus the unauthenticated bootstrap it needs."""
