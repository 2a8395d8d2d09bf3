"""DynamoDB backend (aioboto3): the core's :class:`~northstar_core.storage.ItemStore` port.

``open_store(target)`` opens a store on the target's table; ``provision(target, dry_run=...)``
creates the table and its TTL setting. Connection params (:class:`~northstar_adapters.params.
DynamoParams`): ``endpoint_url`` (moto/local only), ``region`` (default: AWS_REGION, then AWS_DEFAULT_REGION),
``table_prefix`` (default ``northstar_``; table name = prefix + the route's table, which defaults
to the resource kind), and the retry/timeout knobs of :class:`DynamoConfig`.
Credentials come only from the SDK's standard chain (environment, profile, instance role).
"""

from northstar_adapters.dynamodb.provision import ProvisionError, drop, plan, provision
from northstar_adapters.dynamodb.store import CAPABILITIES, DynamoConfig, DynamoItemStore, open_store

__all__ = [
    "CAPABILITIES",
    "DynamoConfig",
    "DynamoItemStore",
    "ProvisionError",
    "drop",
    "open_store",
    "plan",
    "provision",
]
