-- The application role and its databases, for docker-compose.yml's db-init service.
--
-- Run at every start as the superuser: psql -v ON_ERROR_STOP=1 -f docker/db-init.sql
-- Names and the password come from the environment (.env), read with \getenv so that the
-- password is in no command line. Every statement is idempotent: a password changed in .env
-- takes effect at the next `docker compose up`.
\getenv app_user POSTGRES_USER
\getenv app_password POSTGRES_PASSWORD
\getenv study_db POSTGRES_DB
\getenv mlflow_db MLFLOW_DB
\getenv auth_db MLFLOW_AUTH_DB

-- The role the services and workers log in as: it owns its databases and nothing else, so a
-- leaked worker URL cannot read other databases, create roles or run server-side programs.
SELECT format('CREATE ROLE %I', :'app_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec
SET password_encryption = 'scram-sha-256';
ALTER ROLE :"app_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'app_password';

-- The study database (Optuna), MLflow's runs, and MLflow's users and permissions.
CREATE TEMPORARY TABLE wanted AS
  SELECT DISTINCT unnest(ARRAY[:'study_db', :'mlflow_db', :'auth_db']) AS datname;
SELECT format('CREATE DATABASE %I OWNER %I', datname, :'app_user') FROM wanted
 WHERE datname NOT IN (SELECT datname FROM pg_database) \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', datname, :'app_user') FROM wanted \gexec
-- Only the owner (and the superuser) may connect.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', datname) FROM wanted \gexec
