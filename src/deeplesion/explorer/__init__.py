"""The lesion explorer: a local web app to browse DeepLesion (``deeplesion serve``).

``catalog`` answers table queries (filters, lesions, patients, similar lesions, the body
map), ``images`` reads and windows slices without leaving ROOT, ``app`` is the Starlette
application, ``static/`` the page (plain JavaScript and CSS, shipped with the package).
Needs the ``[serve]`` extra (starlette, uvicorn).
"""
