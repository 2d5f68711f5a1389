"""Durable state: the database (models, migrations) and the content-addressed blob store."""
