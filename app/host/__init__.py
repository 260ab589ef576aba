"""What the job learns about the machine it runs on."""
