"""Notifications: a durable outbox written with the change that causes it, delivered by a
worker over SMTP (mails) and signed HTTP (webhooks), plus the expiry-reminder scheduler.

Public surface: `Notifier` (the token-event listener), `Worker` (one delivery and
scheduling pass, or a loop), `start_background_worker` (for the embedded server).
"""
