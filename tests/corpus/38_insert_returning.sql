-- A data-modifying statement instead of a SELECT.
-- expect: rejected INSERT
INSERT INTO tb_tag (slug) VALUES ('x') RETURNING pk_tag
