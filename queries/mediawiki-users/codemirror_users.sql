-- Registered users at the end of the day, per edit-count bucket and per
-- value of the CodeMirror (syntax highlighting) preference.
SELECT
    DATE('{from_date}') AS date,
    CASE
        WHEN user_editcount = 0 THEN '0'
        WHEN user_editcount < 5 THEN '1-4'
        WHEN user_editcount < 100 THEN '5-99'
        ELSE '100+'
    END AS edit_bucket,
    COALESCE(CAST(up_value AS CHAR), 'default') AS codemirror,
    COUNT(*) AS users
FROM user
LEFT JOIN user_properties
    ON up_user = user_id AND up_property = 'usecodemirror'
WHERE user_registration < '{to_timestamp}'
GROUP BY edit_bucket, codemirror
ORDER BY MIN(user_editcount), codemirror
