"""Features on the event stream, one file each: delete the file and the feature is gone."""
