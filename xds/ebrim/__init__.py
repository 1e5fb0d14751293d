"""ebRIM 3.0 <-> model: read a SubmitObjectsRequest into a Submission, write RegistryResponses."""
