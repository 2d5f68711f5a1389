"""Delivery to a real Tryton: JSON-RPC, the chart and parties it needs, booking, errors."""
