"""Domain services: no Flask globals; they take their collaborators in the constructor or as arguments."""
