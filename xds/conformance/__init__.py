"""Running NIST XDS Toolkit testkit tests against any XDS.b system: reading the plans (plan),
the rewrites the toolkit makes before sending (ebrim21, prepare), running the steps (runner),
checking what the plans expect (expect) and reporting (report, command)."""
