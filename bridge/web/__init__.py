"""The browser mixer: ``stemstream live --web PORT`` serves a touch page (stem and bus faders, mute/solo,
scenes, bypass, meters, status) to any browser on the network, as one more surface of the separator's
control model (:mod:`bridge.control.model`). :mod:`bridge.web.server` is the server (aiohttp on its own
thread), :mod:`bridge.web.surface` the live session's surface and the terminal QR code; the page itself
is ``bridge/web/static`` (HTML, CSS, JavaScript: no build step, nothing fetched from elsewhere)."""
