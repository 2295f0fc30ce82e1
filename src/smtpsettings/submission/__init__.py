"""The SMTP submission port: applications that speak only SMTP hand the portal's mail to the outbox.

A second front door beside the HTTP API: it signs clients in with a portal's API key, checks what they
claim to send as, and commits each message to the outbox before answering 250, as ``POST /messages`` does.
"""
