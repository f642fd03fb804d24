"""The dashboard's pages, one module a page, over the building blocks in :mod:`.html`."""
