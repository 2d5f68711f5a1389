"""The rules stage's I/O: claim accepted messages, recognise and rule on them, store documents."""
