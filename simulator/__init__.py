"""What-if simulation of a contact-center day, driving the service's own dispatch code."""
