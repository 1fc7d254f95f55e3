-- What the target answered for a delivered passenger, when its pusher keeps it (the `http`
-- pusher's `keep_response`): shown with the step in the console.
ALTER TABLE steps ADD COLUMN result TEXT;
