-- Events now go through the fleet's outbox (aifleet.outbox, workers/runtime/outbox.py): what is
-- still waiting here moves there with its Nats-Msg-Id, then this table goes.
INSERT INTO aifleet.outbox (msg_id, tenant, component, event, type, payload, created_at)
SELECT 'prompt-' || msg_id::text, tenant, 'prompt', event,
       CASE event
           WHEN 'template_created' THEN 'aifleet.v1.PromptTemplateCreatedEvent'
           WHEN 'label_moved' THEN 'aifleet.v1.PromptLabelMovedEvent'
           WHEN 'template_deleted' THEN 'aifleet.v1.PromptTemplateDeletedEvent'
       END,
       payload, created_at
FROM outbox
ORDER BY id;

DROP TABLE outbox;
