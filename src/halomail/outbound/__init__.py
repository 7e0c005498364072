"""Mail that leaves: composing it, the outbox that sends each mail once, the notifier, SMS."""
