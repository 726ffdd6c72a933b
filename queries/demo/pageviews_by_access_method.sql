-- Pageviews of all wikis in one week (Sunday to Saturday), one row per
-- access method; share is the method's percentage of the week's views.
SELECT '{from_date}' AS date,
       access_method,
       SUM(views) AS views,
       ROUND(100.0 * SUM(views) / (SELECT SUM(views) FROM pageviews
                                   WHERE day >= '{from_date}' AND day < '{to_date}'), 1) AS share
FROM pageviews
WHERE day >= '{from_date}' AND day < '{to_date}'
GROUP BY access_method
ORDER BY access_method
