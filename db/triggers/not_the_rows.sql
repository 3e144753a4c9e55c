-- Template: in an exception handler of a posting function, after v_state, v_message,
-- v_detail and v_hint were read. Errors that are not the rows' fault fail the write under
-- either on_error, unchanged, for the application to retry: a serialization failure or
-- deadlock, a lock timeout, resources, the server (the classes catalog._NOT_ABOUT_THE_QUERY
-- names).
                IF left(v_state, 2) IN ('08', '40', '53', '55', '57', '58', 'XX') THEN
                    RAISE;
                END IF;
