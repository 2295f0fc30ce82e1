"""smtpsettings: the DocSpace SMTP settings API as a self-hosted service."""
