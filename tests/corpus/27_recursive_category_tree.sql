-- A category path computed with WITH RECURSIVE.
-- expect: rejected recursive CTE
WITH RECURSIVE path AS (
    SELECT c.pk_category, c.fk_parent, c.name::text AS path FROM tb_category c WHERE c.fk_parent IS NULL
    UNION ALL
    SELECT c.pk_category, c.fk_parent, path.path || ' / ' || c.name FROM tb_category c JOIN path ON path.pk_category = c.fk_parent
)
SELECT p.pk_category, p.path FROM path p
