"""The fleet service (issue 14): verifies and stores what a fleet of airframes attests.

It imports attest/, hardware/ and truststore/, never agent/ or sim/."""
