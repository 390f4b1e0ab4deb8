-- Writes run after each corpus TVIEW is created, one statement per line; the TVIEW must equal its
-- definition after every one of them.
UPDATE tb_organization SET name = name || ' Inc', plan = 'team' WHERE pk_organization = 2
INSERT INTO tb_organization (id, name) VALUES ('00000000-0000-0000-0000-000000000099', 'New Org')
UPDATE tb_user SET name = 'Renamed ' || pk_user, fk_organization = 3 WHERE pk_user IN (1, 2, 14)
UPDATE tb_user SET is_active = NOT is_active, roles = roles || 'editor'::text WHERE pk_user % 5 = 0
UPDATE tb_user SET deleted_at = '2024-05-01' WHERE pk_user = 7
INSERT INTO tb_user (id, fk_organization, email, name) VALUES ('00000000-0000-0000-0000-000000000001', 10001, 'new@example.com', 'Newcomer')
UPDATE tb_post SET title = upper(title), status = 'published', published_at = '2024-04-01' WHERE pk_post IN (2, 3, 5)
UPDATE tb_post SET fk_author = 10001 WHERE pk_post = 8
UPDATE tb_post SET view_count = view_count + 1
INSERT INTO tb_post (id, fk_author, title, status) VALUES ('00000000-0000-0000-0000-000000000002', 10001, 'Hello', 'published')
INSERT INTO tb_comment (fk_post, fk_author, body) SELECT p, 10001, 'Welcome' FROM generate_series(1, 5) p
UPDATE tb_comment SET fk_post = 10001, body = body || '!' WHERE pk_comment IN (10, 20)
DELETE FROM tb_comment WHERE pk_comment IN (30, 31, 105)
INSERT INTO tb_post_tag VALUES (10001, 1), (10001, 2)
DELETE FROM tb_post_tag WHERE fk_tag = 3
UPDATE tb_tag SET slug = slug || '-x' WHERE pk_tag IN (1, 2)
UPDATE tb_category SET name = 'Literature', fk_parent = 3 WHERE pk_category = 4
UPDATE tb_product SET price = price * 2, attributes = attributes || '{"sale": true}' WHERE pk_product IN (1, 2, 3)
UPDATE tb_product SET fk_category = 2 WHERE pk_product = 9
INSERT INTO tb_product (sku, fk_category, name, price) VALUES ('SKU-NEW', 5, 'Meeple', 9.99)
UPDATE tb_inventory SET quantity = quantity - 1 WHERE fk_product <= 3
INSERT INTO tb_inventory VALUES (10001, 5)
INSERT INTO tb_customer (fk_user, name, country) VALUES (10001, 'New Customer', 'DE')
INSERT INTO tb_address (fk_customer, kind, street, city, country) VALUES (10001, 'billing', '1 New St', 'Berlin', 'DE'), (3, 'shipping', '9 Side St', 'Paris', 'FR')
DELETE FROM tb_address WHERE pk_address = 5
INSERT INTO tb_order (fk_customer, status) VALUES (10001, 'new')
INSERT INTO tb_order_item (fk_order, fk_product, quantity, unit_price) VALUES (10001, 1, 2, 2.50), (10001, 10001, 1, 9.99), (4, 2, 1, 1.00)
UPDATE tb_order_item SET quantity = quantity + 1 WHERE fk_order = 7
DELETE FROM tb_order_item WHERE pk_order_item IN (1, 2)
UPDATE tb_order SET status = 'shipped' WHERE pk_order IN (1, 2)
INSERT INTO tb_review (fk_product, fk_customer, rating, body) VALUES (1, 10001, 5, 'Great'), (10001, 2, 1, NULL)
UPDATE tb_review SET rating = 3 WHERE pk_review = 4
DELETE FROM tb_review WHERE pk_review = 6
INSERT INTO tb_project (fk_organization, name) VALUES (10001, 'Launch')
INSERT INTO tb_task (fk_project, fk_assignee, title, status) VALUES (10001, 10001, 'Kickoff', 'doing'), (1, NULL, 'Unassigned', 'todo')
UPDATE tb_task SET status = 'done', fk_assignee = 3 WHERE pk_task IN (1, 2, 3)
DELETE FROM tb_task WHERE pk_task = 4
DELETE FROM tb_post WHERE pk_post = 6
