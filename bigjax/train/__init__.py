"""Training: optimizer, pure steps, parallel drivers, the loop."""
