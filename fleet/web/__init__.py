"""The fleet service's HTTP layer: the app (``app``), who may do what (``guard``), the bounds on
requests (``limits``), the JSON API (``routes_api``), the pages (``routes_pages``, ``routes_admin``)
and how values are shown (``views``). It decides nothing about attestations: :mod:`fleet.store` does."""
