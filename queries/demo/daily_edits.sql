-- Edits, distinct editors and bytes added/removed on one wiki in one day.
-- GROUP BY makes a day without edits return no row at all (rather than a
-- row of zeros), which reportupdater stores as one empty row.
SELECT '{from_date}' AS date,
       COUNT(*) AS edits,
       COUNT(DISTINCT user_id) AS editors,
       SUM(CASE WHEN bytes > 0 THEN bytes ELSE 0 END) AS bytes_added,
       -SUM(CASE WHEN bytes < 0 THEN bytes ELSE 0 END) AS bytes_removed
FROM edits
WHERE wiki = '{wiki}'
  AND rev_timestamp >= '{from_timestamp}'
  AND rev_timestamp < '{to_timestamp}'
GROUP BY wiki
