"""Route modules, one per domain; each exports ``ROUTES`` (listed in ``northstar_http.app``)."""
