"""The XDS.b Document Registry: register (ITI-42), validate, stored queries (ITI-18)."""
