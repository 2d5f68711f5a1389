"""The SMTP door: the aiosmtpd server and its handler (`door`), the checks on a transaction's
bytes that a streaming DATA reader can reuse (`checks`), and AUTH for submission (`login`)."""
