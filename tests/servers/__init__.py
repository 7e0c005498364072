"""Real servers the tests start on loopback (Dovecot, SMTP), and the fixtures that own them."""
