"""The Forward process tab: its page (``page``) and its handlers (``handlers``: ``ForwardTab``)."""
