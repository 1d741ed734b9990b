"""``massiveds serve``: the datastore over HTTP (an ASGI app on uvicorn), its OpenAPI schema, and a page to read it by eye.

``engine`` holds the open datastore and the search thread, ``models`` the request and response models,
``app`` the routes, ``run`` the listening socket, the worker processes and shutdown; ``static/`` the page.
"""
