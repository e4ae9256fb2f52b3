"""The trust state on disk: the pinned root, the manifest and their versions, and the trust
directory that the offline verifier and the fleet service read (between hardware/ and agent/)."""
