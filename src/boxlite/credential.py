"""BoxLite's ``boxlite.credential``: credentials of the REST client (secrets masked in ``repr``)."""

from .api.credential import AccessToken, ApiKeyCredential, Credential

__all__ = ["AccessToken", "ApiKeyCredential", "Credential"]
