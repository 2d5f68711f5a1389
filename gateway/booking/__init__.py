"""Booking a document as an invoice in a package: neutral invoice input, mapping, planning."""
