-- Per wiki and month: editors with at least one edit, and active editors
-- (at least 5 edits in the month, the usual Wikimedia definition).
SELECT '{from_date}' AS date,
       wiki,
       COUNT(*) AS editors,
       SUM(CASE WHEN edits >= 5 THEN 1 ELSE 0 END) AS active_editors
FROM (
    SELECT wiki, user_id, COUNT(*) AS edits
    FROM edits
    WHERE rev_timestamp >= '{from_timestamp}' AND rev_timestamp < '{to_timestamp}'
    GROUP BY wiki, user_id
) AS per_user
GROUP BY wiki
ORDER BY wiki
