"""The service layer: one handler per use case, registered on a messagebus Registry."""
