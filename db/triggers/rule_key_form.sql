-- Template: the posting links of one rule, in the form its key has now. A rule keyed by
-- one integer column finds its links by key_num; any other rule by source_key, with
-- key_num NULL (compiler.link_match). When the key column changes type (from integer to
-- a domain over bigint, to text or numeric, and back), the links of the rule's live
-- entries are rewritten in the new form, so that its trigger, verify and backfill find
-- them: left as they were, the rule would see its rows unposted and post them a second
-- time. A link whose source_key has no integer form keeps its form (verify then reports
-- it orphaned, and the row missing).
UPDATE ledger.posting
SET key_num = {{key_num}}
WHERE rule = {{rule}}
  AND {{other_form}}
