"""The doors: every way a message comes in ends in `accept.accept_message`."""
