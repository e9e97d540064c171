"""Collection: what happened during a run. Nothing here decides what is wrong (see ``analyze``)."""
