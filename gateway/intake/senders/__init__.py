"""Who may send documents into a dossier: the allowed-sender lists (`allowlist`), the evidence
that a sender is who it claims (`authentication`: SPF, DKIM, trusted Authentication-Results),
and the quarantine decision for doors that cannot refuse (`screen`)."""
