"""Delivery: the queue of documents to integrations, its workers and one adapter per kind."""
