"""Publishing: what people see and take away. The registry's models handed out (pull, load,
predict), optuna-dashboard and its study notes and artifacts, the HTML report and its plots,
and the one best-per-operation summary every view uses. Reads storage; never prints."""
