"""`packwise console`: a web app for ops on the decision topics (store, reader, pages, web, replay)."""
